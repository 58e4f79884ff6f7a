"""egeunet-deploy: EGE-UNet from PyTorch training to phones.

The installed package ``egeunet_deploy`` gathers the repository's parts under one namespace:
``egeunet_deploy.model`` (model/), ``.export`` (export/), ``.calibration`` (calibration/), ``.runtimes``
(runtimes/); this folder (cli/) is the namespace root and holds the ``egeunet`` command line.
"""

__version__ = "0.1.0"
