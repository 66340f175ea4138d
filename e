timeout: failed to run command ‘../riposte’: No such file or directory
