"""What the test folders share; tests/ is on sys.path (tests/conftest.py), so ``from support.clock import ...``.

- ``clock``: FakeClock, the one fake time source (an ``inf2_deploy.clock.Clock``, and callable).
- ``aws``: the fake AWS environment, moto extended for ml.inf2 and UpdateEndpoint, a moto server.
- ``artifacts``: tiny-gptj's spec, its packaged artifact, and artifact folders the local server serves.
- ``servers``: a free port, and an ASGI app under uvicorn in a thread.
- ``standin_packages``: putting the DJL and Neuron stand-ins of standins/ on ``sys.path``.

The fixtures stay in the conftest.py files, as thin calls into these modules.
"""
