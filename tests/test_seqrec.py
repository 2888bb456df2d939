"""Next-item models (issue 8): the seqrec configuration section."""

from __future__ import annotations

import pytest

from shoplens.config import ConfigError, load_config


def test_seqrec_configuration_is_validated(root):
    conf = root / "conf"
    cfg = load_config("local", conf, ["seqrec.num_sampled=50", "seqrec.gru4rec.hidden_units=[32, 16]"])

    assert cfg.seqrec.num_sampled == 50 and cfg.seqrec.gru4rec.hidden_units == (32, 16)
    with pytest.raises(ConfigError, match="seqrec.model must be one of gru4rec, got 'sasrec'"):
        load_config("local", conf, ["seqrec.model=sasrec"])
    with pytest.raises(ConfigError, match=r"seqrec.gru4rec.dropout must be in \[0, 1\)"):
        load_config("local", conf, ["seqrec.gru4rec.dropout=1"])
    with pytest.raises(ConfigError, match="seqrec.batch_size must be at least 1"):
        load_config("local", conf, ["seqrec.batch_size=0"])
