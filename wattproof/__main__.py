from wattproof.cli import main

main()
