"""The HTTP side: the ActiveSync resource (``resource``), Autodiscover, the Basic-auth
step through the front door (``basic``), the query forms, proxies' forwarded addresses,
and the one module that makes sites and listeners (``listen``, ``limits``)."""
