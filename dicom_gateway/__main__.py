"""``python -m dicom_gateway``: the DICOM gateway alone (``teleconsult serve --no-http``)."""

import sys

from teleconsult.cli import main

sys.exit(main(["serve", "--no-http", *sys.argv[1:]]))
