"""The Flask extensions, created once and bound to an app in `create_app`."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from .models import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
# No default limits: only the sign-in form is throttled (web/account.py), per address and per user name.
limiter = Limiter(key_func=get_remote_address)
