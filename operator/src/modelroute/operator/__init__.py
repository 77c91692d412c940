"""The kopf operator: watches the CRDs, compiles per-namespace route tables, rolls them out.

It lives at ``operator/src/modelroute/operator/`` so it can be a regular package
without ever importing as the standard library's ``operator`` (see
docs/architecture.md, "Package layout").
"""
