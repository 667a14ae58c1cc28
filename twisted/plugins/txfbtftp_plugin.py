from twisted.application.service import ServiceMaker

tftp = ServiceMaker("txfbtftp", "txfbtftp._daemon.tap", "A pluggable TFTP server for network boot.", "tftp")
