from trackpixel.cli import main

main()
