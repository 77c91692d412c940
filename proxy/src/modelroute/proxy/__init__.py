"""The modelroute sidecar: compiled route table, router, and the aiohttp proxy."""
