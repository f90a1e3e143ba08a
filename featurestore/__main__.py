"""`python -m featurestore` runs the command line."""

from featurestore.cli.main import main

main()
