from unipair.cli.main import main

main()
