pytest_plugins = ["livedata_core.testing"]
