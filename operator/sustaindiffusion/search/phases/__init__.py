"""The phases a search runs, one module each, composed by the engine the way pymoo composes an
algorithm from operators: `baselines` (generation 0: the defaults and the spec's configurations),
then per generation `evidence` (more images for front points) and either `generation` (every new
candidate whole) or `screening` (a first pass, then the rest for the survivors), and at the end
`validation` (held-out prompts and seeds). `base` holds the protocol, the context and the image
plan. A phase imports neither the engine nor another phase.
"""
