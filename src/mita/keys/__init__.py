"""mita.keys: where secrets live: the master key, vending keys, and (later) the HSM."""
