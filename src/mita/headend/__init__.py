"""The head-end: smart meters reached over the network (DLMS/COSEM), and the commands sent to them.

Beside the outbox and above the vending service: a vend for a connected meter leaves a *deliver tokens* command
in its own transaction, and ``mita worker`` runs commands through the ``headend`` outbox channel. The DLMS codec
here is dlms-cosem (MIT), never the simulated meter's gurux-dlms, so that one codec's bug cannot hide on both ends.
"""
