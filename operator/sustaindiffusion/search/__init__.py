"""The search: encoding, NSGA-II ask/tell, objectives, the engine that owns a search's outcome, the
archive record format, and the one generation loop both runtimes drive through an executor.

Pure Python: never imports kopf, the Kubernetes client or the ML stack (import-linter enforces it).
"""
