"""Outgoing event webhooks: endpoints an operator registers, the event outbox the
send and tracking paths write to, Standard Webhooks signing, and the dispatcher
that delivers each event with retries."""
