"""Device provisioning: `python -m ingest_tasks.devices` adds tenants and devices to the broker's
dynamic security plugin, lists, rotates, disables and removes them, live, over MQTT.

`accounts` is pure (names, checks, the plugin's JSON commands); `control` talks to the broker;
`__main__` is the command line.
"""
