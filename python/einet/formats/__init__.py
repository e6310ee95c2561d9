"""einet's files, each written atomically, read as untrusted input and schema-checked, no pickle:
the npz container (:mod:`.npz`), ET- and CS-profiles (:mod:`.profiles`), predictor files
(:mod:`.predictor_file`), checkpoints with their held-out split (:mod:`.checkpoint`, :mod:`.split`)
and the deployment bundle's manifest (:mod:`.manifest`). Import the module you need: only
:mod:`.checkpoint` needs torch."""
