"""Entry point: ``python -m privacy_lit {fit,validate,test,predict} --config conf/demo.yaml``."""

from privacy_lit.cli import main

if __name__ == "__main__":
    main()
