# SPDX-License-Identifier: Apache-2.0
"""``fwassist serve``: a local OpenAI-compatible completion server (docs/serve.md).

* engine.py: the slots that run generations, off the event loop with the GIL released;
* carbon.py: each request's energy and SCI, and the window reports of ``/v1/carbon``;
* metrics.py: the Prometheus metrics (prometheus_client);
* app.py: the Starlette application; dashboard.html: the page at ``/``.

Needs the serve extra (``pip install 'fwassist[serve]'``): starlette, uvicorn,
prometheus_client.
"""
