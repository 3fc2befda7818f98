// `user-directory` in TypeScript: one document per registered user and an
// email lookup, the same read model as the Rust projection.
//
// Collections:
// - `users`, keyed by user id: `{ id, email, username, registeredAt }`. The
//   password hash is never copied. Version 1 events carry no `registeredAt`;
//   the event's stored time stands in for it.
// - `emails`, keyed by the lower-cased email: `{ userId }`.

import { defineProjection } from '@projector/guest-sdk';
import { UserRegistered } from './events.js';

export default defineProjection({
  name: 'user-directory',
  version: '1.0.0',
  eventTypes: [UserRegistered.type],
  streams: ['user-'],
  indexes: [
    ['users', 'email'],
    ['users', 'username'],
  ],
  apply(event, model) {
    const registered = event.decode(UserRegistered);
    if (!registered) return;
    const user = {
      id: registered.userId,
      email: registered.email,
      username: registered.username,
      registeredAt: registered.registeredAt ?? event.createdRfc3339(),
    };
    model.put('emails', user.email.toLowerCase(), { userId: user.id });
    model.put('users', user.id, user);
  },
});
