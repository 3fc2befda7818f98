// Throws something that is not an Error on its first event: the host must
// show what was thrown, not a bare trap.
import { defineProjection } from '@projector/guest-sdk';

export default defineProjection({
  name: 'throwing',
  version: '0.0.1',
  streams: ['hostile-'],
  apply(event) {
    throw { refused: event.streamId };
  },
});
