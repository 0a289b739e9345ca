"""The reference server core (sans-I/O, durable on SQLite); see docs and DESIGN §1."""
