// Never returns from its first event: the host's batch deadline must stop it.
import { defineProjection } from '@projector/guest-sdk';

export default defineProjection({
  name: 'looping',
  version: '0.0.1',
  streams: ['hostile-'],
  apply() {
    for (;;) {
      // spin
    }
  },
});
