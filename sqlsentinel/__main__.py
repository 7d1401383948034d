from sqlsentinel.entry import main

main()
