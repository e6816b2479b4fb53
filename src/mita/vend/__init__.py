"""mita.vend: the vending service. Money in, tokens out, nothing lost."""
