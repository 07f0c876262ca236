"""Recording broker sessions and replaying them (``livedata run --record DIR``, ``livedata replay DIR``).

- :mod:`.format`: the file format (JSON lines in zstd-compressed files, one folder per instance, one file per hour).
- :mod:`.redaction`: secrets taken out of every record before it is written.
- :mod:`.writer`: the :class:`~.writer.Recorder`, a bounded queue drained by a writer thread.
- :mod:`.http`: the httpx transport through which a plugin's REST answers are recorded (and replayed).
- :mod:`.reader`: reading a recording back.

The replay (feeding a recording through a plugin's own stream and the publisher) is the runner's:
:mod:`livedata_core.runner.replay`.

Importing this package imports none of them. See docs/recording.md.
"""
