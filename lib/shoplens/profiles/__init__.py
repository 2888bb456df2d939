"""User profiles: daily activity per user, profile snapshots, RFM segments and behavioural clusters."""
