"""Payment and message channels: money in through a provider, tokens out to the customer.

Every channel ends in the same pipeline (:mod:`.payments`): an adapter turns its provider's message into one
:class:`~.payments.PaymentFact`, keyed by the provider's own transaction id; one transaction stores it, what the
provider said, and the outbox row that will vend it, before the provider gets its acknowledgement. The outbox
worker vends it through the vending service (idempotency key ``pay:<payment id>`` under the channel's own API key)
and queues the delivery; every step is idempotent, every payment ends in a final state, and the reconciliation
job (:mod:`.reconcile`) compares Mita's records with the provider's and repairs what a lost callback left.

Channels talk to the vending tables only through the vending service; their own tables are ``payments``,
``payment_events``, ``sms_messages``, ``sms_inbound`` and ``pos_purchases``.
"""
