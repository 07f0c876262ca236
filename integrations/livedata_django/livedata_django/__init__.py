"""livedata in a Django project (Thor): add ``"livedata_django"`` to ``INSTALLED_APPS``, include
``livedata_django.urls``, and name the token model in ``LIVEDATA["TOKEN_MODEL"]``.

* :mod:`livedata_django.tokens`: :class:`~livedata_django.tokens.ModelTokenStore`, broker tokens in the
  application's own model.
* :mod:`livedata_django.urls`: the Schwab OAuth login in the browser, the Schwab account endpoints and the
  feed control endpoints.
* Management commands ``livedata_run`` (the runner), ``livedata_auth`` (terminal login) and ``livedata_listen``
  (a consumer dispatching to handlers of :mod:`livedata_django.listen`).

See docs/thor.md.
"""

__version__ = "0.1.0"
