"""The security suite (issue 16, part 3): who may call what, fuzzing of the API and the parsers, key leaks in the
newer outputs, limits on unauthenticated routes. Everything on SQLite, in-process or with one ``mita serve``."""
