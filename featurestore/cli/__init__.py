"""The `featurestore` command line: thin commands over compile, registry, runtime and client."""
