from wangpctl.main import main

main()
