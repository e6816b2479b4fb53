"""mita.sim: simulated smart STS meters, the meter model behind a DLMS/COSEM server (issue 12).

The DLMS library (gurux-dlms, GPL-2.0, the optional ``mita[dlms]`` extra) is imported only inside this package and
only by :mod:`mita.sim.objects` and :mod:`mita.sim.server`; :mod:`mita.sim.carrier` and :mod:`mita.sim.status` are
pure and import without it.
"""
