pytest_plugins = ["morpheus.testing.fixtures"]
