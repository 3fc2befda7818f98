// The domain's `UserRegistered` event, as the command side writes it
// (events/src/lib.rs), read with zod. Version 2 added `registeredAt`;
// version 1 events are upcast without it, and readers that need a time use
// the event's own.

import { z } from 'zod';
import { eventType } from '@projector/guest-sdk';

const V1 = z
  .object({
    userId: z.string(),
    email: z.string(),
    username: z.string(),
    passwordHash: z.string(),
  })
  .strict();

const V2 = V1.extend({ registeredAt: z.string() }).strict();

/** A user registered, at its current shape. */
export type UserRegistered = z.infer<typeof V1> & { registeredAt?: string };

export const UserRegistered = eventType<UserRegistered>('UserRegistered', {
  1: V1,
  2: V2,
});
