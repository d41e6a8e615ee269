from icdcoder.cli import main

main()
