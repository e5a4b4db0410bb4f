"""The knowledge: technique catalog, playbook library and schema, decision guide,
estimator and the hardware / model spec tables. Pure data and functions: no torch at import."""
