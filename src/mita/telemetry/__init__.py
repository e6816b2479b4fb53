"""What smart meters and the head-end say to each other over MQTT: topics, payloads and their vocabulary (pure).

One version of the format (``mita/v1``), written down in ``docs/telemetry.md``: :mod:`.topics` (the topic scheme),
:mod:`.obis` (which OBIS code carries which quantity, in which unit), :mod:`.events` (the event vocabulary),
:mod:`.payload` (the messages as value types, each with a symmetric encode/decode pair). No client library, no
clock and no I/O here: the simulated meters (:mod:`mita.sim`) and the head-end's ingest both speak through it.
"""
