"""Local deployments: the packaged artifact served on this machine by the same handler as the container.

Laptop side only: nothing here ships in the artifact.

- ``deploy``: :func:`serve_local`, package a spec and serve it under a name (the public entry).
- ``records``: :class:`LocalDeployment` records and the :class:`LocalStore` that keeps them.
- ``supervisor``: :class:`LocalSupervisor` starts, waits for and stops server processes.
- ``process``: what the OS says about a server's pid.
- ``paths``: where records, logs and caches live (``INF2_DEPLOY_HOME``).
- ``server``, ``batcher``, ``rolling``, ``runtime_api``: the LMI-compatible HTTP server itself,
  with DJL-style dynamic or rolling batching and the SageMaker runtime API.
- ``connect``: a predictor for a URL, a local deployment or an endpoint.
"""
