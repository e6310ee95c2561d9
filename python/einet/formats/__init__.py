"""einet's files, each written atomically, read as untrusted input and schema-checked, no pickle:
the npz container (:mod:`.npz`), ET- and CS-profiles (:mod:`.profiles`), predictor files
(:mod:`.predictor_file`), checkpoints with their held-out split (:mod:`.checkpoint`, :mod:`.split`),
deployments (:mod:`.deployment`) and the deployment bundle (:mod:`.manifest`, its schema
:mod:`.manifest_schema`). Import the module you need: only :mod:`.checkpoint` needs torch. Nothing
here imports the layers that use these files (tests/test_layers.py)."""
