"""Training scripts: ``python -m train --arch resnet --data PATH``; see train/config.py for every option."""
