"""modelroute: route a pod's LLM traffic across providers and regions.

The package maps the repository's folders to one import namespace:

* ``modelroute.resources`` – the pydantic models of the custom resources
  (``ModelProvider``, ``ModelRoute``, ``FailoverPolicy``) and the built-in
  model catalogue.  Pure data: no HTTP, no Kubernetes client.
* ``modelroute.proxy`` (folder ``proxy/``) – the compiled route table (the
  contract between operator and sidecar), the router and the sidecar itself.
* ``modelroute.operator`` (folder ``operator/``) – the kopf operator.
* ``modelroute.devtools`` – the fake provider and the demo.
* ``modelroute.cli`` – the single ``modelroute`` console script.
"""

__version__ = "0.1.0"
