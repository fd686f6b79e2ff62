from gadugi.cli import main

main()
