from sqlsentinel.cli import main

main()
