"""wangpctl: the control CLI of wangpd. Imports nothing from the daemon but ``wangpd.protocol``."""
