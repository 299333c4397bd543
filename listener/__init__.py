"""The MQTT listener: MQTT in, chunks out. Never parses payloads, never touches the database."""
