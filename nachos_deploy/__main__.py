from nachos_deploy.cli import main

main()
