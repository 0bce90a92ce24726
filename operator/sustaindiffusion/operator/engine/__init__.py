"""The search engine: encoding, NSGA-II ask/tell, objectives and hypervolume. Pure Python, no Kubernetes."""
