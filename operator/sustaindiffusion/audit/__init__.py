"""Bias figures a person has checked: an audit of the detector's answers against people's labels.

`sample` draws a stratified sample of a finished search's saved images, `auditset` writes and
verifies it (images, a manifest with hashes, the detector's answers kept apart), `labels` and `page`
are the labelling page and its atomic label files, `agreement` and `correction` are the statistics,
and `score` puts them together into `score.json`, which `findings` reads for the report and the
profile. Never imports the ML stack: the detector's answers are read from the run's artifacts.
"""
