from wangpd.main import cli

cli(prog_name="wangpd")
