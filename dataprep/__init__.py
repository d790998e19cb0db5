"""Data preparation: one ``build_<corpus>`` module per corpus (run as ``python -m dataprep.build_<corpus>`` from the
repository root, normally through ``dataprep/prepare_<corpus>.sh``), sharing :mod:`dataprep.common` and
:mod:`datasets.manifest`."""
