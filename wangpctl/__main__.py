from wangpctl.cli import main

main()
