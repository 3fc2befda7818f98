// Allocates without bound on its first event: the host's memory cap must stop it.
import { defineProjection } from '@projector/guest-sdk';

const kept: number[][] = [];

export default defineProjection({
  name: 'hungry',
  version: '0.0.1',
  streams: ['hostile-'],
  apply() {
    for (;;) kept.push(new Array(1 << 20).fill(kept.length));
  },
});
